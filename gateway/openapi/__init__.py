"""The OpenAPI document of the gateway, typed from the contracts: schemas and examples per
dtype and shape (schemas.py), the document of the live registry or of a config (document.py),
and the same document in OpenAPI 3.0 (dialect30.py)."""
