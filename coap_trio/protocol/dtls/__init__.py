"""DTLS 1.2 for coaps:// (RFC 6347, RFC 7925 profile): a sans-I/O engine."""
