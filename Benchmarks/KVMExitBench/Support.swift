import CLinux

extension String {
    /// `value` with two decimals.
    init(format2 value: Double) {
        let scaled = (value * 100).rounded()
        let whole = Int(scaled / 100)
        let fraction = Int(abs(scaled).truncatingRemainder(dividingBy: 100))
        self = "\(scaled < 0 && whole == 0 ? "-" : "")\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

/// The spawn time handed in by the wrapper script (`CH_BENCH_SPAWN_NS`), if any.
func spawnNanoseconds() -> UInt64? {
    guard let raw = getenv("CH_BENCH_SPAWN_NS") else { return nil }
    return UInt64(String(cString: raw))
}
