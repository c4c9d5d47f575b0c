"""One construct per concern: state table, event bus, function runtime, router, monitoring."""
