//! A real HAProxy (Debian's package) in TCP mode in front of a deployment's frontends.
