"""leanrank.serve"""
