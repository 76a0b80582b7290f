"""leanrank.models"""
