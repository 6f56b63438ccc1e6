"""Session stores: the protocol and the built-in backends, one module each."""

from .base import ListableStorage, Storage
from .disk import DiskStorage
from .memory import MemoryStorage

__all__ = ["DiskStorage", "ListableStorage", "MemoryStorage", "Storage"]
