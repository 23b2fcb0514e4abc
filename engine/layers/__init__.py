"""Layer classes, one module per family; ``classes`` re-exports them all."""
