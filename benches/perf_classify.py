"""Groups a flat `perf report --sort sym` by what the code does (benches/profile.sh)."""
import sys,re,collections
c=collections.Counter()
for l in open(sys.argv[1]):
    m=re.match(r'\s*([\d.]+)%\s+\[(.)\]\s+(.*)',l)
    if not m: continue
    p=float(m.group(1)); k=m.group(2); s=m.group(3)
    if k=='.':
        if any(x in s for x in ['ring_core','ring::','nistz','x25519','sha256','sha512','aes_','aes::','gcm','GFp','poly1305','chacha','gcm_']): g='user: crypto (ring)'
        elif any(x in s for x in ['mi_','malloc','free','alloc::']): g='user: allocator'
        elif any(x in s for x in ['memmove','memcpy','memset','memchr']): g='user: memcpy/memset/memchr'
        elif 'jsonl' in s or 'validate' in s: g='user: JSONL validation/index'
        elif 'rustls' in s: g='user: rustls (non-crypto)'
        elif 'h2::' in s or 'hpack' in s: g='user: h2'
        elif 'glommio' in s or 'io_uring' in s: g='user: glommio'
        elif 'flume' in s or 'futex' in s or 'syscall' in s: g='user: thread handoff / syscall stubs'
        elif 'packhunt' in s: g='user: packhunt other'
        else: g='user: other'
    else:
        if any(x in s for x in ['tcp','ip_','inet','skb','net_','napi','dev_','sock','send','recv','loopback','nf_','softirq','xmit','rcv','__local_bh']): g='kernel: TCP/IP (loopback: both ends)'
        elif any(x in s for x in ['ext4','jbd','block','blk','bio','virt','iowrite','folio','filemap','page_cache','writeback','fsync','dirty','buffer','_copy_from_user','copy_user','rep_movs']): g='kernel: files (page cache, ext4, block)'
        elif any(x in s for x in ['io_uring','io_','cqring','sqe']): g='kernel: io_uring'
        elif any(x in s for x in ['futex','schedule','switch','wake','enqueue','dequeue','update_curr','pick_','idle','irq','resched','ttwu','select_task','raw_spin']): g='kernel: scheduling/futex/irq/locks'
        else: g='kernel: other'
    c[g]+=p
for g,v in c.most_common(): print('| %s | %.1f %% |'%(g,v))
