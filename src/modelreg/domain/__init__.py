"""Types, rules and ports of the registry; imports no driver and no generated code."""
