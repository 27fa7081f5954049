//! GF(2^8) arithmetic and the multiply-accumulate kernel behind Reed-Solomon.
//!
//! The field is the one klauspost/reedsolomon (and so kcp-go) uses: polynomial
//! x^8 + x^4 + x^3 + x^2 + 1 (0x11D), generator 2 (§4.1). All tables are built
//! at compile time.
//!
//! The kernel computes `dst[j] = sum_i coef[j][i] * src[i]` over byte vectors.
//! It is chosen once at run time from what the CPU offers:
//!
//! | path            | needs                       | bytes per step |
//! |-----------------|-----------------------------|----------------|
//! | `Avx512Gfni`    | avx512f + avx512bw + gfni   | 64             |
//! | `Avx2Gfni`      | avx2 + gfni                 | 32             |
//! | `Avx2`          | avx2                        | 32             |
//! | `Ssse3`         | ssse3                       | 16             |
//! | `Scalar`        | nothing                     | 1              |
//!
//! GFNI's `gf2p8mulb` uses the AES polynomial (0x11B), so it cannot be used
//! directly; instead multiplication by a constant `c`, which is a linear map
//! over GF(2)^8, is done with `gf2p8affineqb` and an 8x8 bit matrix per `c`.
//! The PSHUFB paths use the split-nibble method: `c*x = lo[c][x & 15] ^
//! hi[c][x >> 4]`.

/// Field polynomial (without the x^8 term it is 0x1D).
const POLY: u16 = 0x11D;

const fn build_exp_log() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    // Doubling the exp table lets `mul` skip the `% 255`.
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const EXP_LOG: ([u8; 512], [u8; 256]) = build_exp_log();
static EXP: [u8; 512] = EXP_LOG.0;
static LOG: [u8; 256] = EXP_LOG.1;

const fn mul_const(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP_LOG.0[EXP_LOG.1[a as usize] as usize + EXP_LOG.1[b as usize] as usize]
}

const fn build_mul_table() -> [[u8; 256]; 256] {
    let mut t = [[0u8; 256]; 256];
    let mut a = 0;
    while a < 256 {
        let mut b = 0;
        while b < 256 {
            t[a][b] = mul_const(a as u8, b as u8);
            b += 1;
        }
        a += 1;
    }
    t
}

/// `MUL_TABLE[c][x] = c * x`: the scalar path's per-coefficient lookup table.
static MUL_TABLE: [[u8; 256]; 256] = build_mul_table();

const fn build_nibble_tables() -> [[u8; 32]; 256] {
    let mut t = [[0u8; 32]; 256];
    let mut c = 0;
    while c < 256 {
        let mut i = 0;
        while i < 16 {
            t[c][i] = mul_const(c as u8, i as u8);
            t[c][16 + i] = mul_const(c as u8, (i << 4) as u8);
            i += 1;
        }
        c += 1;
    }
    t
}

/// Split-nibble tables: bytes 0..16 are `c * lo`, bytes 16..32 are `c * (hi << 4)`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
static NIBBLE_TABLES: [[u8; 32]; 256] = build_nibble_tables();

const fn build_affine_tables() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        // Column k of the bit matrix is c * 2^k. gf2p8affineqb computes output
        // bit i as parity(matrix.byte[7 - i] & x), so byte 7-i collects, for
        // every input bit k, whether bit i of c * 2^k is set.
        let mut m = 0u64;
        let mut i = 0;
        while i < 8 {
            let mut row = 0u8;
            let mut k = 0;
            while k < 8 {
                if (mul_const(c as u8, 1 << k) >> i) & 1 != 0 {
                    row |= 1 << k;
                }
                k += 1;
            }
            m |= (row as u64) << (8 * (7 - i));
            i += 1;
        }
        t[c] = m;
        c += 1;
    }
    t
}

/// GFNI affine matrices for multiplication by each constant.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
static AFFINE_TABLES: [u64; 256] = build_affine_tables();

/// `a * b` in GF(2^8).
#[inline]
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    MUL_TABLE[a as usize][b as usize]
}

/// Multiplicative inverse; `None` for 0.
#[inline]
pub(crate) fn inv(a: u8) -> Option<u8> {
    if a == 0 {
        None
    } else {
        Some(EXP[255 - LOG[a as usize] as usize])
    }
}

/// `a ^ n` with klauspost's convention `x^0 = 1` (also for x = 0): the
/// Vandermonde entries of §4.1.
pub(crate) fn exp(a: u8, n: usize) -> u8 {
    if n == 0 {
        1
    } else if a == 0 {
        0
    } else {
        EXP[(LOG[a as usize] as usize * n) % 255]
    }
}

/// Which implementation of the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// AVX-512 (F + BW) with GFNI affine multiplication, 64 bytes per step.
    Avx512Gfni,
    /// AVX2 with GFNI affine multiplication (VEX encoded), 32 bytes per step.
    Avx2Gfni,
    /// AVX-512 (F + BW) split-nibble VPSHUFB, 64 bytes per step.
    Avx512,
    /// AVX2 split-nibble VPSHUFB, 32 bytes per step.
    Avx2,
    /// SSSE3 split-nibble PSHUFB, 16 bytes per step.
    Ssse3,
    /// Portable: one 256-byte lookup table per coefficient.
    Scalar,
}

impl KernelPath {
    /// Every path this CPU can run, fastest first (always ends with `Scalar`).
    pub fn available() -> Vec<KernelPath> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("gfni")
            {
                v.push(KernelPath::Avx512Gfni);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("gfni")
            {
                v.push(KernelPath::Avx2Gfni);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                v.push(KernelPath::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(KernelPath::Avx2);
            }
            if std::arch::is_x86_feature_detected!("ssse3") {
                v.push(KernelPath::Ssse3);
            }
        }
        v.push(KernelPath::Scalar);
        v
    }

    /// The path used by the Reed-Solomon code on this CPU.
    pub fn best() -> KernelPath {
        static BEST: std::sync::OnceLock<KernelPath> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| KernelPath::available()[0])
    }
}

/// Inconsistent arguments to [`matmul`] (a bug in the caller, never peer data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelArgsError;

/// `dst[dst_offs[j] ..][..len] = sum_i coefs[j * n_in + i] * src[src_offs[i] ..][..len]`
/// with `n_in = src_offs.len()`, on the fastest available path.
///
/// Offsets index into one flat buffer per side so callers keep their shards in
/// preallocated arenas (no per-packet `Vec<&[u8]>`). Every range is checked and
/// the destination ranges must not overlap, so the SIMD code below can work on
/// raw pointers.
pub(crate) fn matmul(
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    matmul_with(KernelPath::best(), coefs, src, src_offs, dst, dst_offs, len)
}

/// [`matmul`] on an explicit path (tests use it to cover every path).
pub(crate) fn matmul_with(
    path: KernelPath,
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    dispatch::<false>(path, coefs, src, src_offs, dst, dst_offs, len)
}

/// Like [`matmul`] but adds into the outputs: `dst[j] ^= sum_i ...`.
pub(crate) fn matmul_acc(
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    dispatch::<true>(KernelPath::best(), coefs, src, src_offs, dst, dst_offs, len)
}

/// [`matmul_acc`] on an explicit path.
#[cfg(test)]
pub(crate) fn matmul_acc_with(
    path: KernelPath,
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    dispatch::<true>(path, coefs, src, src_offs, dst, dst_offs, len)
}

/// `ACC`: add into the outputs instead of overwriting them.
fn dispatch<const ACC: bool>(
    path: KernelPath,
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    check_args(coefs, src, src_offs, dst, dst_offs, len)?;
    if len == 0 || dst_offs.is_empty() {
        return Ok(());
    }
    if src_offs.is_empty() {
        if !ACC {
            for &o in dst_offs {
                dst[o..o + len].fill(0);
            }
        }
        return Ok(());
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512Gfni if x86::has_avx512_gfni() => {
            // SAFETY: the CPU supports the features (checked just above), and
            // check_args proved every range in bounds and the outputs disjoint.
            unsafe { x86::avx512_gfni::kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, len) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Gfni if x86::has_avx2_gfni() => {
            // SAFETY: as above.
            unsafe { x86::avx2_gfni::kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, len) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 if x86::has_avx512() => {
            // SAFETY: as above.
            unsafe { x86::avx512::kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, len) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: as above.
            unsafe { x86::avx2::kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, len) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Ssse3 if std::arch::is_x86_feature_detected!("ssse3") => {
            // SAFETY: as above.
            unsafe { x86::ssse3::kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, len) }
        }
        _ => scalar_kernel::<ACC>(coefs, src, src_offs, dst, dst_offs, 0, len),
    }
    Ok(())
}

fn check_args(
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &[u8],
    dst_offs: &[usize],
    len: usize,
) -> Result<(), KernelArgsError> {
    if coefs.len()
        != src_offs
            .len()
            .checked_mul(dst_offs.len())
            .ok_or(KernelArgsError)?
    {
        return Err(KernelArgsError);
    }
    let in_bounds = |o: usize, total: usize| o.checked_add(len).is_some_and(|end| end <= total);
    if !src_offs.iter().all(|&o| in_bounds(o, src.len())) {
        return Err(KernelArgsError);
    }
    if !dst_offs.iter().all(|&o| in_bounds(o, dst.len())) {
        return Err(KernelArgsError);
    }
    // Destination ranges must be pairwise disjoint: each is written as a whole
    // vector at a time from accumulators, and an overlap would make the
    // result depend on the path. Every caller here passes ascending offsets,
    // which can be checked in linear time.
    if dst_offs
        .windows(2)
        .all(|w| w[0] < w[1] && w[1] - w[0] >= len)
    {
        return Ok(());
    }
    for (j, &a) in dst_offs.iter().enumerate() {
        for &b in &dst_offs[j + 1..] {
            if len > 0 && a < b + len && b < a + len {
                return Err(KernelArgsError);
            }
        }
    }
    Ok(())
}

/// Portable kernel over bytes `from..len` of every shard (the SIMD paths use
/// it for their tails).
fn scalar_kernel<const ACC: bool>(
    coefs: &[u8],
    src: &[u8],
    src_offs: &[usize],
    dst: &mut [u8],
    dst_offs: &[usize],
    from: usize,
    len: usize,
) {
    let n_in = src_offs.len();
    for (j, &d) in dst_offs.iter().enumerate() {
        let out = &mut dst[d + from..d + len];
        if !ACC {
            out.fill(0);
        }
        for (i, &s) in src_offs.iter().enumerate() {
            let table = &MUL_TABLE[coefs[j * n_in + i] as usize];
            let inp = &src[s + from..s + len];
            for (o, &x) in out.iter_mut().zip(inp) {
                *o ^= table[x as usize];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Each module below is one path; they share the loop
    //! structure from `simd_kernel!`: output shards are processed in blocks of
    //! up to four accumulators, each step loads every input vector once and
    //! multiplies it by the block's coefficients.
    //!
    //! Safety contract of every `kernel` here (checked by `matmul_with`): the
    //! CPU has the module's target features; `coefs.len() == n_in * n_out`;
    //! every `src_offs[i] + len <= src.len()` and `dst_offs[j] + len <=
    //! dst.len()`; destination ranges are pairwise disjoint.

    pub(super) fn has_avx512_gfni() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni")
    }

    pub(super) fn has_avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }

    pub(super) fn has_avx2_gfni() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("gfni")
    }

    /// Generates `kernel` and its const-generic block function for one path.
    /// `$prep` turns a loaded input vector into whatever `$mul` needs
    /// (identity for GFNI, the two nibble vectors for PSHUFB), so that work
    /// is shared by all outputs of a block.
    macro_rules! simd_kernel {
        (
            features = $feat:literal,
            width = $w:expr,
            vec = $v:ty,
            zero = $zero:expr,
            load = |$lp:ident| $load:expr,
            store = |$sp:ident, $sv:ident| $store:expr,
            xor = |$xa:ident, $xb:ident| $xor:expr,
            prep = |$px:ident| $prep:expr,
            mul = |$mc:ident, $mx:ident| $mul:expr,
            tail = $tail:ident,
        ) => {
            /// One block of `NB` outputs starting at output `o`.
            ///
            /// # Safety
            ///
            /// The `kernel` contract (module docs) holds and `o + NB <=
            /// dst_offs.len()`.
            #[target_feature(enable = $feat)]
            unsafe fn block<const ACC: bool, const NB: usize>(
                coefs: &[u8],
                src: &[u8],
                src_offs: &[usize],
                dst: &mut [u8],
                dst_offs: &[usize],
                o: usize,
                len: usize,
            ) {
                let n_in = src_offs.len();
                let sp = src.as_ptr();
                let dp = dst.as_mut_ptr();
                let mut pos = 0usize;
                while pos + $w <= len {
                    let mut acc: [$v; NB] = [$zero; NB];
                    if ACC {
                        for (k, a) in acc.iter_mut().enumerate() {
                            // SAFETY: dst_offs[o+k] + pos + width <= dst.len().
                            *a = unsafe {
                                let $lp = dp.add(dst_offs[o + k] + pos).cast_const();
                                $load
                            };
                        }
                    }
                    for (i, &so) in src_offs.iter().enumerate() {
                        // SAFETY: so + pos + width <= so + len <= src.len().
                        let $px = unsafe {
                            let $lp = sp.add(so + pos);
                            $load
                        };
                        let x = $prep;
                        for (k, a) in acc.iter_mut().enumerate() {
                            let $mc = coefs[(o + k) * n_in + i];
                            let $mx = x;
                            let m = $mul;
                            let $xa = *a;
                            let $xb = m;
                            *a = $xor;
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        // SAFETY: dst_offs[o+k] + pos + width <= dst.len(), and
                        // the ranges of distinct outputs are disjoint.
                        unsafe {
                            let $sp = dp.add(dst_offs[o + k] + pos);
                            let $sv = *a;
                            $store;
                        }
                    }
                    pos += $w;
                }
                if pos < len {
                    $tail::<ACC, NB>(coefs, src, src_offs, dst, dst_offs, o, pos, len);
                }
            }

            /// `dst[dst_offs[j]..][..len]` (+)= sum over i of
            /// `coefs[j * n_in + i] * src[src_offs[i]..][..len]` in GF(2^8).
            ///
            /// # Safety
            ///
            /// The module's contract: the CPU has this path's features,
            /// `coefs.len() == n_in * n_out`, every source and destination
            /// range is in bounds, and destination ranges are pairwise
            /// disjoint (`check_args` proves all but the first).
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn kernel<const ACC: bool>(
                coefs: &[u8],
                src: &[u8],
                src_offs: &[usize],
                dst: &mut [u8],
                dst_offs: &[usize],
                len: usize,
            ) {
                let n_out = dst_offs.len();
                let mut o = 0;
                while o < n_out {
                    // SAFETY: forwarded contract.
                    unsafe {
                        match n_out - o {
                            1 => block::<ACC, 1>(coefs, src, src_offs, dst, dst_offs, o, len),
                            2 => block::<ACC, 2>(coefs, src, src_offs, dst, dst_offs, o, len),
                            3 => block::<ACC, 3>(coefs, src, src_offs, dst, dst_offs, o, len),
                            _ => block::<ACC, 4>(coefs, src, src_offs, dst, dst_offs, o, len),
                        }
                    }
                    o += 4;
                }
            }
        };
    }

    /// Scalar tail shared by the paths without masked loads: bytes
    /// `from..len` of outputs `o..o+NB`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn scalar_tail<const ACC: bool, const NB: usize>(
        coefs: &[u8],
        src: &[u8],
        src_offs: &[usize],
        dst: &mut [u8],
        dst_offs: &[usize],
        o: usize,
        from: usize,
        len: usize,
    ) {
        let n_in = src_offs.len();
        let end = (o + NB).min(dst_offs.len());
        super::scalar_kernel::<ACC>(
            &coefs[o * n_in..end * n_in],
            src,
            src_offs,
            dst,
            &dst_offs[o..end],
            from,
            len,
        );
    }

    pub(super) mod avx512_gfni {
        use std::arch::x86_64::*;

        use super::super::AFFINE_TABLES;

        /// Masked tail: the last `len - from` (< 64) bytes in one vector step.
        #[allow(clippy::too_many_arguments)]
        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "avx512f,avx512bw,gfni")]
        fn masked_tail<const ACC: bool, const NB: usize>(
            coefs: &[u8],
            src: &[u8],
            src_offs: &[usize],
            dst: &mut [u8],
            dst_offs: &[usize],
            o: usize,
            from: usize,
            len: usize,
        ) {
            let n_in = src_offs.len();
            let rem = len - from;
            let mask: __mmask64 = (1u64 << rem) - 1;
            let mut acc = [_mm512_setzero_si512(); NB];
            if ACC {
                for (k, a) in acc.iter_mut().enumerate() {
                    // SAFETY: masked load of exactly the in-bounds bytes.
                    *a = unsafe {
                        _mm512_maskz_loadu_epi8(
                            mask,
                            dst.as_ptr().add(dst_offs[o + k] + from).cast(),
                        )
                    };
                }
            }
            for (i, &so) in src_offs.iter().enumerate() {
                // SAFETY: the mask limits the load to so+from .. so+len, in
                // bounds by the kernel contract; masked-off bytes are not read.
                let x =
                    unsafe { _mm512_maskz_loadu_epi8(mask, src.as_ptr().add(so + from).cast()) };
                for (k, a) in acc.iter_mut().enumerate() {
                    let m =
                        _mm512_set1_epi64(AFFINE_TABLES[coefs[(o + k) * n_in + i] as usize] as i64);
                    *a = _mm512_xor_si512(*a, _mm512_gf2p8affine_epi64_epi8::<0>(x, m));
                }
            }
            for (k, a) in acc.iter().enumerate() {
                // SAFETY: masked store of exactly the in-bounds bytes.
                unsafe {
                    _mm512_mask_storeu_epi8(
                        dst.as_mut_ptr().add(dst_offs[o + k] + from).cast(),
                        mask,
                        *a,
                    )
                };
            }
        }

        simd_kernel! {
            features = "avx512f,avx512bw,gfni",
            width = 64,
            vec = __m512i,
            zero = _mm512_setzero_si512(),
            load = |p| _mm512_loadu_si512(p.cast()),
            store = |p, v| _mm512_storeu_si512(p.cast(), v),
            xor = |a, b| _mm512_xor_si512(a, b),
            prep = |x| x,
            mul = |c, x| _mm512_gf2p8affine_epi64_epi8::<0>(
                x,
                _mm512_set1_epi64(AFFINE_TABLES[c as usize] as i64)
            ),
            tail = masked_tail,
        }
    }

    pub(super) mod avx2_gfni {
        use std::arch::x86_64::*;

        use super::super::AFFINE_TABLES;
        use super::scalar_tail;

        simd_kernel! {
            features = "avx2,gfni",
            width = 32,
            vec = __m256i,
            zero = _mm256_setzero_si256(),
            load = |p| _mm256_loadu_si256(p.cast()),
            store = |p, v| _mm256_storeu_si256(p.cast(), v),
            xor = |a, b| _mm256_xor_si256(a, b),
            prep = |x| x,
            mul = |c, x| _mm256_gf2p8affine_epi64_epi8::<0>(
                x,
                _mm256_set1_epi64x(AFFINE_TABLES[c as usize] as i64)
            ),
            tail = scalar_tail,
        }
    }

    pub(super) mod avx512 {
        use std::arch::x86_64::*;

        use super::super::NIBBLE_TABLES;
        use super::scalar_tail;

        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "avx512f,avx512bw")]
        fn nibbles(x: __m512i) -> (__m512i, __m512i) {
            let mask = _mm512_set1_epi8(0x0f);
            (
                _mm512_and_si512(x, mask),
                _mm512_and_si512(_mm512_srli_epi64::<4>(x), mask),
            )
        }

        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "avx512f,avx512bw")]
        fn mul_nibbles(c: u8, lo: __m512i, hi: __m512i) -> __m512i {
            let t = &NIBBLE_TABLES[c as usize];
            // SAFETY: t is 32 bytes; each 16-byte half is read in bounds.
            // VPSHUFB looks up within each 128-bit lane, so the table is
            // repeated in all four lanes.
            let (tl, th) = unsafe {
                (
                    _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr().cast())),
                    _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr().add(16).cast())),
                )
            };
            _mm512_xor_si512(_mm512_shuffle_epi8(tl, lo), _mm512_shuffle_epi8(th, hi))
        }

        simd_kernel! {
            features = "avx512f,avx512bw",
            width = 64,
            vec = __m512i,
            zero = _mm512_setzero_si512(),
            load = |p| _mm512_loadu_si512(p.cast()),
            store = |p, v| _mm512_storeu_si512(p.cast(), v),
            xor = |a, b| _mm512_xor_si512(a, b),
            prep = |x| nibbles(x),
            mul = |c, x| mul_nibbles(c, x.0, x.1),
            tail = scalar_tail,
        }
    }

    pub(super) mod avx2 {
        use std::arch::x86_64::*;

        use super::super::NIBBLE_TABLES;
        use super::scalar_tail;

        /// Low and high nibbles of every byte of `x`.
        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "avx2")]
        fn nibbles(x: __m256i) -> (__m256i, __m256i) {
            let mask = _mm256_set1_epi8(0x0f);
            (
                _mm256_and_si256(x, mask),
                _mm256_and_si256(_mm256_srli_epi64::<4>(x), mask),
            )
        }

        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "avx2")]
        fn mul_nibbles(c: u8, lo: __m256i, hi: __m256i) -> __m256i {
            let t = &NIBBLE_TABLES[c as usize];
            // SAFETY: t is 32 bytes; each 16-byte half is read in bounds.
            let (tl, th) = unsafe {
                (
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast())),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().add(16).cast())),
                )
            };
            _mm256_xor_si256(_mm256_shuffle_epi8(tl, lo), _mm256_shuffle_epi8(th, hi))
        }

        simd_kernel! {
            features = "avx2",
            width = 32,
            vec = __m256i,
            zero = _mm256_setzero_si256(),
            load = |p| _mm256_loadu_si256(p.cast()),
            store = |p, v| _mm256_storeu_si256(p.cast(), v),
            xor = |a, b| _mm256_xor_si256(a, b),
            prep = |x| nibbles(x),
            mul = |c, x| mul_nibbles(c, x.0, x.1),
            tail = scalar_tail,
        }
    }

    pub(super) mod ssse3 {
        use std::arch::x86_64::*;

        use super::super::NIBBLE_TABLES;
        use super::scalar_tail;

        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "ssse3")]
        fn nibbles(x: __m128i) -> (__m128i, __m128i) {
            let mask = _mm_set1_epi8(0x0f);
            (
                _mm_and_si128(x, mask),
                _mm_and_si128(_mm_srli_epi64::<4>(x), mask),
            )
        }

        ///
        /// # Safety
        ///
        /// Needs the target features it enables: callers are `kernel`s with
        /// the same features, which the compiler lets call it safely.
        #[target_feature(enable = "ssse3")]
        fn mul_nibbles(c: u8, lo: __m128i, hi: __m128i) -> __m128i {
            let t = &NIBBLE_TABLES[c as usize];
            // SAFETY: t is 32 bytes; each 16-byte half is read in bounds.
            let (tl, th) = unsafe {
                (
                    _mm_loadu_si128(t.as_ptr().cast()),
                    _mm_loadu_si128(t.as_ptr().add(16).cast()),
                )
            };
            _mm_xor_si128(_mm_shuffle_epi8(tl, lo), _mm_shuffle_epi8(th, hi))
        }

        simd_kernel! {
            features = "ssse3",
            width = 16,
            vec = __m128i,
            zero = _mm_setzero_si128(),
            load = |p| _mm_loadu_si128(p.cast()),
            store = |p, v| _mm_storeu_si128(p.cast(), v),
            xor = |a, b| _mm_xor_si128(a, b),
            prep = |x| nibbles(x),
            mul = |c, x| mul_nibbles(c, x.0, x.1),
            tail = scalar_tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplication by shift-and-reduce, independent of every table.
    fn slow_mul(mut a: u8, mut b: u8) -> u8 {
        let mut r = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                r ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= 0x1d;
            }
            b >>= 1;
        }
        r
    }

    #[test]
    fn tables_match_shift_and_reduce() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a).unwrap()), 1);
            }
        }
        assert_eq!(inv(0), None);
        assert_eq!(exp(0, 0), 1);
        assert_eq!(exp(0, 3), 0);
        assert_eq!(exp(2, 8), 0x1d);
    }

    #[test]
    fn affine_and_nibble_tables_multiply() {
        for c in 0..=255usize {
            for x in 0..=255u8 {
                let want = slow_mul(c as u8, x);
                let nib =
                    NIBBLE_TABLES[c][(x & 15) as usize] ^ NIBBLE_TABLES[c][16 + (x >> 4) as usize];
                assert_eq!(nib, want);
                // Emulate gf2p8affineqb: bit i = parity(matrix.byte[7-i] & x).
                let m = AFFINE_TABLES[c];
                let mut y = 0u8;
                for i in 0..8 {
                    let row = (m >> (8 * (7 - i))) as u8;
                    y |= (((row & x).count_ones() & 1) as u8) << i;
                }
                assert_eq!(y, want, "affine c={c} x={x}");
            }
        }
    }

    struct Case {
        n_in: usize,
        n_out: usize,
        len: usize,
        coefs: Vec<u8>,
        src: Vec<u8>,
        src_offs: Vec<usize>,
        dst_offs: Vec<usize>,
        dst_len: usize,
    }

    fn case(n_in: usize, n_out: usize, len: usize, seed: u64) -> Case {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        };
        // Odd strides and a leading gap so offsets are unaligned.
        let stride = len + 3;
        let coefs = (0..n_in * n_out).map(|_| next()).collect();
        let src = (0..5 + n_in * stride).map(|_| next()).collect();
        let src_offs = (0..n_in).rev().map(|i| 5 + i * stride).collect();
        let dst_offs = (0..n_out).map(|j| 1 + j * stride).collect();
        Case {
            n_in,
            n_out,
            len,
            coefs,
            src,
            src_offs,
            dst_offs,
            dst_len: 1 + n_out * stride + 2,
        }
    }

    fn reference(c: &Case) -> Vec<u8> {
        let mut dst = vec![0xAAu8; c.dst_len];
        for j in 0..c.n_out {
            for b in 0..c.len {
                let mut acc = 0u8;
                for i in 0..c.n_in {
                    acc ^= slow_mul(c.coefs[j * c.n_in + i], c.src[c.src_offs[i] + b]);
                }
                dst[c.dst_offs[j] + b] = acc;
            }
        }
        dst
    }

    #[test]
    fn every_path_matches_reference() {
        let paths = KernelPath::available();
        assert!(paths.contains(&KernelPath::Scalar));
        // Miri interprets every intrinsic: fewer shapes there, still every
        // block size (1..=4 outputs) and vector tail.
        let shapes: &[(usize, usize)] = if cfg!(miri) {
            &[(1, 1), (3, 2), (2, 3), (5, 4), (3, 5)]
        } else {
            &[(1, 1), (2, 1), (3, 2), (10, 3), (5, 4), (7, 5), (13, 9)]
        };
        let lens: &[usize] = if cfg!(miri) {
            &[0, 1, 15, 16, 17, 33, 65]
        } else {
            &[
                0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 200, 1494,
            ]
        };
        for &(n_in, n_out) in shapes {
            for &len in lens {
                let c = case(n_in, n_out, len, (n_in * 1000 + n_out * 10 + len) as u64);
                let want = reference(&c);
                for &p in &paths {
                    let mut dst = vec![0xAAu8; c.dst_len];
                    matmul_with(
                        p,
                        &c.coefs,
                        &c.src,
                        &c.src_offs,
                        &mut dst,
                        &c.dst_offs,
                        c.len,
                    )
                    .unwrap();
                    assert_eq!(dst, want, "path {p:?} n_in {n_in} n_out {n_out} len {len}");
                }
            }
        }
    }

    #[test]
    fn every_path_accumulates() {
        let shapes: &[(usize, usize)] = if cfg!(miri) {
            &[(1, 1), (3, 2), (2, 5)]
        } else {
            &[(1, 1), (1, 7), (3, 2), (10, 3), (4, 5)]
        };
        let lens: &[usize] = if cfg!(miri) {
            &[1, 17, 65]
        } else {
            &[1, 16, 31, 64, 65, 130, 255]
        };
        for &(n_in, n_out) in shapes {
            for &len in lens {
                let c = case(n_in, n_out, len, (n_in * 77 + n_out * 5 + len) as u64);
                let product = reference(&c);
                // Start from arbitrary bytes; the result must be start ^ product.
                let start: Vec<u8> = (0..c.dst_len).map(|i| (i * 29 + 11) as u8).collect();
                let mut want = start.clone();
                for &o in &c.dst_offs {
                    for b in 0..len {
                        want[o + b] ^= product[o + b];
                    }
                }
                for p in KernelPath::available() {
                    let mut dst = start.clone();
                    matmul_acc_with(p, &c.coefs, &c.src, &c.src_offs, &mut dst, &c.dst_offs, len)
                        .unwrap();
                    assert_eq!(dst, want, "path {p:?} n_in {n_in} n_out {n_out} len {len}");
                }
            }
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        let src = [0u8; 10];
        let mut dst = [0u8; 10];
        // Wrong coefficient count.
        assert!(matmul(&[1, 2], &src, &[0], &mut dst, &[0], 4).is_err());
        // Source out of bounds.
        assert!(matmul(&[1], &src, &[8], &mut dst, &[0], 4).is_err());
        // Destination out of bounds, and offset overflow.
        assert!(matmul(&[1], &src, &[0], &mut dst, &[7], 4).is_err());
        assert!(matmul(&[1], &src, &[usize::MAX], &mut dst, &[0], 4).is_err());
        // Overlapping outputs, ascending or not.
        assert!(matmul(&[1, 1], &src, &[0], &mut dst, &[0, 3], 4).is_err());
        assert!(matmul(&[1, 1], &src, &[0], &mut dst, &[3, 0], 4).is_err());
        assert!(matmul(&[1, 1], &src, &[0], &mut dst, &[2, 2], 4).is_err());
        assert!(matmul(&[1, 1], &src, &[0], &mut dst, &[0, 4], 4).is_ok());
        assert!(matmul(&[1, 1], &src, &[0], &mut dst, &[4, 0], 4).is_ok());
    }

    #[test]
    fn no_inputs_zeroes_outputs() {
        let mut dst = [9u8; 8];
        matmul(&[], &[], &[], &mut dst, &[2], 4).unwrap();
        assert_eq!(dst, [9, 9, 0, 0, 0, 0, 9, 9]);
    }
}
