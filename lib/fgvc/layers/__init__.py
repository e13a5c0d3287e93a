"""Building blocks shared by methods (attention erasure, SE, spatial attention, ...)."""
