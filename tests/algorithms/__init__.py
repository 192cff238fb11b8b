"""Tests of the suggest functions (a package, so test modules can share `helpers`)."""
