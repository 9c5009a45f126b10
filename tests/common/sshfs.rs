//! A real sshfs mount over loopback (sshd and sshfs from Debian's packages) for the
//! datastore.
