"""leanrank.core"""
