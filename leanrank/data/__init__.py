"""leanrank.data"""
