"""Thin routers; the logic they call lives in profiles/, advisor/ and executors/."""
