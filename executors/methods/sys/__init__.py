"""System-level methods: graph compilation."""
