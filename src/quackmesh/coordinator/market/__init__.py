"""The marketplace: filtered, sorted node listings and ``job explain`` (why no node took it)."""
