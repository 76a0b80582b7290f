"""leanrank.bench"""
