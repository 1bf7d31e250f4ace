"""Transport security and identity: who is calling, how we know, and what they may do.

Threat model (README "Security"): requests carry whole card, id and phone numbers and move money.
paygate assumes the network between the lending systems and itself can be read and written by
someone else (a compromised host, a mis-routed VLAN), that a bearer token can leak (a log, a
config repository), and that one operator can act in bad faith or by mistake. Against that:

* the gRPC listener speaks TLS, and with a client CA mutual TLS: a caller is the service its
  verified certificate names (its SAN), as gRPC's auth context reports it; a token is a second
  factor or, for local runs, the only one (:mod:`gateway.security.principals`);
* certificates are re-read from their files while the gateway runs, and their expiry is a metric
  with an alert (:mod:`gateway.security.tls`);
* operators have roles, enforced per admin method on the server (:mod:`gateway.api.access`), and a
  manual resolution above a configured amount needs a second operator (:mod:`gateway.resolutions`);
* secrets can come from files or the environment and never print (:mod:`channels.config`);
* operators sign in to the console with a password kept as a scrypt hash
  (:mod:`gateway.security.passwords`) or their token, get a signed session cookie bound to that
  credential, and every request is checked for role and CSRF on the server (:mod:`gateway.console`).

Out of scope: a compromised gateway host (it holds the keys), the database's own access control,
the channels' side of the callback endpoint (their signatures are checked per channel).
"""
