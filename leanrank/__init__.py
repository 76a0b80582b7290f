"""leanrank: make e-commerce search and recommendation Transformers small and fast.

Importing the package is cheap: heavy dependencies (torch, transformers, bm25s, faiss) load
only when the module that needs them is imported.
"""

__version__ = "0.1.0"
