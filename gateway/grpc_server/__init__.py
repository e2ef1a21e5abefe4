"""The gateway's own HTTP/2 gRPC server, run in the asyncio event loop.

    huffman.py  the Huffman code of HPACK (RFC 7541 Appendix B) and its table-driven decoder
    hpack.py    HPACK header block decoding and a static-table-only encoder (RFC 7541)
"""
