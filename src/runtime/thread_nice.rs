//! Setting one thread's nice value. Linux keeps a nice value per thread: `setpriority`
//! with PRIO_PROCESS and a thread id changes that thread alone, not its process.

use std::io;

/// Sets thread `tid`'s nice value.
pub fn nice_thread(tid: libc::pid_t, nice: libc::c_int) -> io::Result<()> {
    // SAFETY: setpriority takes and returns integers only.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Sets the calling thread's nice value.
pub fn nice_this_thread(nice: libc::c_int) -> io::Result<()> {
    // SAFETY: gettid takes nothing and returns an integer.
    nice_thread(unsafe { libc::gettid() }, nice)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the calling thread takes the value and only it does (a thread started after
    // it, like the test harness's others, keeps its own).
    #[test]
    fn a_thread_takes_its_own_nice_value() {
        let read = || {
            // SAFETY: getpriority takes and returns integers only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        };
        let before = std::thread::spawn(read).join().unwrap();
        let niced = std::thread::spawn(move || {
            nice_this_thread(before + 1).unwrap();
            read()
        })
        .join()
        .unwrap();
        assert_eq!(niced, before + 1);
        assert_eq!(std::thread::spawn(read).join().unwrap(), before);
    }
}
