"""leanrank.train"""
