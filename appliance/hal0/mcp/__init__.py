"""Layer 4: the MCP mounts (admin, memory) built from the tool catalogue, behind the Host/Origin gate.

Kept import-free so the CLI can use `hal0.mcp.host_allowlist` without loading the MCP SDK.
"""
