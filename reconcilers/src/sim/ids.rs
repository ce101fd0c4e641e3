//! Ids and randomness: a seeded xorshift generator behind every id the simulated account hands
//! out and every fault roll, so a run replays exactly from its seed.

/// xorshift64*: small, fast and good enough for ids and probabilities.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // xorshift never leaves zero, so mix the seed into a non-zero state.
        Self((seed ^ 0x9e37_79b9_7f4a_7c15).max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform float in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        p > 0.0 && unit < p
    }

    /// `len` lowercase hex digits.
    pub(crate) fn hex(&mut self, len: usize) -> String {
        self.chars(len, b"0123456789abcdef")
    }

    fn chars(&mut self, len: usize, alphabet: &[u8]) -> String {
        let base = alphabet.len() as u64;
        (0..len)
            .map(|_| char::from(alphabet[(self.next_u64() % base) as usize]))
            .collect()
    }

    /// A version 4 UUID, as SSM command ids and ACM certificate ids are.
    pub(crate) fn uuid(&mut self) -> String {
        let variant = self.chars(1, b"89ab");
        format!(
            "{}-{}-4{}-{}{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            variant,
            self.hex(3),
            self.hex(12)
        )
    }

    /// `i-` and 17 hex digits.
    pub(crate) fn instance_id(&mut self) -> String {
        format!("i-{}", self.hex(17))
    }

    /// `d-` and 9 upper-case letters and digits.
    pub(crate) fn deployment_id(&mut self) -> String {
        format!(
            "d-{}",
            self.chars(9, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_shapes_aws_uses() {
        let mut rng = Rng::new(7);
        let uuid = rng.uuid();
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert_eq!(uuid.as_bytes()[14], b'4');

        let instance = rng.instance_id();
        assert!(instance.starts_with("i-") && instance.len() == 19);
        let deployment = rng.deployment_id();
        assert!(deployment.starts_with("d-") && deployment.len() == 11);
        assert!(
            deployment[2..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
    }

    #[test]
    fn equal_seeds_replay_equal_ids() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert_eq!(a.hex(16), b.hex(16));
        assert_ne!(Rng::new(1).hex(16), Rng::new(2).hex(16));
    }

    #[test]
    fn chance_follows_the_probability() {
        let mut rng = Rng::new(3);
        let hits = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits} hits");
        assert!(!(0..100).any(|_| rng.chance(0.0)));
        assert!((0..100).all(|_| rng.chance(1.0)));
    }
}
