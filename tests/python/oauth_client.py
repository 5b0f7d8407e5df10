"""A client as a user would write one: Authlib does client credentials against /v1/token (HTTP
Basic), PyJWT checks the access token against the JWKS found through the RFC 8414 metadata.
Prints one JSON line: what the client got and what the verification found."""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

issuer, client_id, client_secret, scope = sys.argv[1:5]

metadata = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
assert metadata["issuer"] == issuer, metadata

client = OAuth2Session(client_id, client_secret, token_endpoint_auth_method="client_secret_basic", scope=scope or None)
token = client.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")

access_token = token["access_token"]
jwks = jwt.PyJWKClient(metadata["jwks_uri"])
signing_key = jwks.get_signing_key_from_jwt(access_token)
header = jwt.get_unverified_header(access_token)
claims = jwt.decode(
    access_token,
    signing_key.key,
    algorithms=["ES256"],
    audience=issuer,
    issuer=issuer,
    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
)
if header.get("typ") != "at+jwt":
    raise SystemExit("typ is %r, not at+jwt" % header.get("typ"))

# A tampered token must not verify.
head, body, sig = access_token.split(".")
forged = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
try:
    jwt.decode(forged, signing_key.key, algorithms=["ES256"], audience=issuer, issuer=issuer)
    forged_verified = True
except jwt.InvalidSignatureError:
    forged_verified = False

print(json.dumps({
    "token_type": token["token_type"],
    "expires_in": token["expires_in"],
    "scope": token.get("scope"),
    "has_refresh_token": bool(token.get("refresh_token")),
    "access_token": access_token,
    "header": header,
    "claims": claims,
    "forged_verified": forged_verified,
}))
