from .base import Method, MethodConfig
from .registry import create_method, list_methods, method_class, register

__all__ = ["Method", "MethodConfig", "create_method", "list_methods", "method_class", "register"]
