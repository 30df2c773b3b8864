"""Tests for tether.store."""
