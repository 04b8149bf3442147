//! Criterion: one local token-bucket decision (governor GCRA behind keygate's limiter), for a
//! bucket that admits every request (the common case) and for one that is empty (a 429).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::metrics::Metrics;
use keygate::ratelimit::{Algorithm, BucketKey, Limit, RateLimiter};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limiter = Arc::new(RateLimiter::local(Arc::new(Metrics::new(&[]))));
    // Far more than criterion can spend: every check is admitted.
    let open = Limit {
        requests: 1_000_000_000,
        per_seconds: 1,
        burst: 1_000_000,
        algorithm: Algorithm::TokenBucket,
    };
    // One request per hour after a burst of one: every check after the first is refused.
    let closed = Limit {
        requests: 1,
        per_seconds: 3600,
        burst: 1,
        algorithm: Algorithm::TokenBucket,
    };
    let key = BucketKey::from("key_bench_0123456789abcd");
    let account = BucketKey::from("acc_bench_0123456789abcd");
    rt.block_on(async {
        assert!(limiter.check(&key, open).await.allowed());
        limiter.check(&account, closed).await;
        assert!(!limiter.check(&account, closed).await.allowed());
    });

    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("local_bucket_admit", |b| {
        b.to_async(&rt).iter(|| limiter.check(&key, open));
    });
    g.bench_function("local_bucket_refuse", |b| {
        b.to_async(&rt).iter(|| limiter.check(&account, closed));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
