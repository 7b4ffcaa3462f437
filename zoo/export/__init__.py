"""Exports of a package to other serving systems (``zoo export``)."""
