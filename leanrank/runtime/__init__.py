"""leanrank.runtime"""
