"""leanrank.compress"""
