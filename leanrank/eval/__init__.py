"""leanrank.eval"""
