"""Embedded CA, SPIFFE workload certificates, mTLS contexts and their rotation.

No re-exports: importing one module of the package must not import the others (the CA's pull
in cryptography, which a sidecar keeps out of its process).
"""
