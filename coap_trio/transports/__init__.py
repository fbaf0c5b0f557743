"""Transports: the trio side of moving datagrams (and later streams).

Each transport endpoint is driven by one task in the Context's nursery.
"""
