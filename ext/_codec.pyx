# cython: language_level=3
# Placeholder until the native codec lands; snapstate.codec does not import it yet.
IMPL = "native"
