from fgvc.methods.base import Method, MethodConfig
from fgvc.methods.registry import create_method, list_methods, method_class, method_rank, register

__all__ = ["Method", "MethodConfig", "create_method", "list_methods", "method_class", "method_rank", "register"]
