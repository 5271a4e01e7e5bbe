"""The ``ragc`` commands, one module per domain; importing a module registers its commands."""
