"""Checks one Web Push request as a push service and a browser would, with
implementations independent of ours: `cryptography` verifies the VAPID JWT (RFC 8292)
and `http_ece` decrypts the aes128gcm body (RFC 8291 / RFC 8188).

Reads one JSON object on stdin:
  authorization     the Authorization header ("vapid t=<JWT>, k=<key>")
  crypto_key        the Crypto-Key header, if any (must be absent or empty: the key
                    travels in the body with aes128gcm and in `k=` with RFC 8292)
  encoding          the Content-Encoding header (must be aes128gcm)
  body_b64          the request body, standard base64
  endpoint          the subscription's endpoint URL
  ua_private_pem    the subscriber's P-256 private key, PEM
  or ua_private_b64url   ... or its 32-byte scalar, base64url
  auth_b64url       the subscriber's auth secret
  vapid_public_key  the server's key, base64url (the browser's applicationServerKey)

Prints {"ok": true, "payload": "<decrypted text>"}, or {"ok": false, "error": "..."}
and exits 1.
"""

import base64
import json
import sys
import time
from urllib.parse import urlsplit

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_LIFETIME = 24 * 60 * 60  # RFC 8292 §2: exp at most 24 hours ahead


class Refused(Exception):
    pass


def b64url(text, what):
    """Strict base64url without padding, as JWS (RFC 7515) and `k` use."""
    if not isinstance(text, str) or not text or "=" in text or any(c in text for c in "+/ "):
        raise Refused(f"{what} is not unpadded base64url: {text!r}")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as error:
        raise Refused(f"{what} is not base64url: {error}") from None


def origin(url):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"the endpoint is not an http(s) URL: {url!r}")
    host = parts.hostname  # lower-cased, without IPv6 brackets
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def vapid_params(header):
    """`vapid t=..., k=...` (RFC 8292 §3) into {"t": ..., "k": ...}."""
    scheme, _, rest = (header or "").strip().partition(" ")
    if scheme.lower() != "vapid":
        raise Refused(f"the Authorization scheme is not vapid: {header!r}")
    params = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise Refused(f"the Authorization header has a malformed parameter {part!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    if set(params) != {"t", "k"}:
        raise Refused(f"the Authorization header must carry t and k only, has {sorted(params)}")
    return params


def check_vapid(request):
    params = vapid_params(request.get("authorization"))
    key = b64url(params["k"], "k")
    if key != b64url(request["vapid_public_key"], "the expected server key"):
        raise Refused(f"k is {params['k']}, not the server's key {request['vapid_public_key']}")
    if len(key) != 65 or key[0] != 4:
        raise Refused("k is not an uncompressed P-256 point")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)

    pieces = params["t"].split(".")
    if len(pieces) != 3:
        raise Refused("t is not a JWS compact serialisation (three parts)")
    header = json.loads(b64url(pieces[0], "the JWT header"))
    claims = json.loads(b64url(pieces[1], "the JWT claims"))
    if header.get("alg") != "ES256" or header.get("typ", "JWT") != "JWT":
        raise Refused(f"the JWT header is not ES256: {header}")
    signature = b64url(pieces[2], "the JWT signature")
    if len(signature) != 64:
        raise Refused(f"an ES256 signature is r||s, 64 bytes, not {len(signature)}")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, f"{pieces[0]}.{pieces[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused("the JWT signature does not verify with k") from None

    expected_aud = origin(request["endpoint"])
    if claims.get("aud") != expected_aud:
        raise Refused(f"aud is {claims.get('aud')!r}, not the endpoint's origin {expected_aud!r}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Refused(f"exp is not an integer: {exp!r}")
    if not now < exp <= now + MAX_LIFETIME:
        raise Refused(f"exp {exp} is not within the next 24 hours (now {int(now)})")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not (
        (sub.startswith("mailto:") and "@" in sub) or (sub.startswith("https:") and urlsplit(sub).netloc)
    ):
        raise Refused(f"sub is not a mailto: or https: URL: {sub!r}")


def subscriber_key(request):
    if request.get("ua_private_pem"):
        key = serialization.load_pem_private_key(request["ua_private_pem"].encode(), password=None)
    elif request.get("ua_private_b64url"):
        scalar = b64url(request["ua_private_b64url"].rstrip("="), "ua_private_b64url")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    else:
        raise Refused("give ua_private_pem or ua_private_b64url")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refused("the subscriber's key is not a P-256 private key")
    return key


def decrypt(request):
    if (request.get("encoding") or "").strip().lower() != "aes128gcm":
        raise Refused(f"Content-Encoding is {request.get('encoding')!r}, not aes128gcm")
    if request.get("crypto_key"):
        raise Refused(f"aes128gcm with vapid t=, k= takes no Crypto-Key header: {request['crypto_key']!r}")
    body = base64.b64decode(request["body_b64"], validate=True)
    if len(body) > 4096:
        raise Refused(f"the body has {len(body)} bytes; push services need take no more than 4096")
    auth = b64url(request["auth_b64url"].rstrip("="), "auth_b64url")
    plaintext = http_ece.decrypt(body, private_key=subscriber_key(request), auth_secret=auth, version="aes128gcm")
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("the decrypted payload is not UTF-8") from None


def main():
    try:
        request = json.load(sys.stdin)
        check_vapid(request)
        payload = decrypt(request)
    except Exception as error:  # every failure is a refusal, reported as JSON
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"ok": True, "payload": payload}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
