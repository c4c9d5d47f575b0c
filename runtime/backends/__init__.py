"""Backends: the storage, queue and event bus a deployed app runs on."""
