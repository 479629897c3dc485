"""Prediction history: the database schema, its migrations and the queries (SQLAlchemy; no Ray, no HTTP)."""
