"""leanrank.recipes"""
