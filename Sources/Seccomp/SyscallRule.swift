// Allow-list entries as data: a system call's name and the argument tests that let it through.

/// A test on one argument of a system call: `(argument & mask) == value`.
public struct ArgumentCondition: Hashable, Sendable, CustomStringConvertible {
    /// The argument's position, from 0.
    public let index: UInt32
    /// The bits of the argument that are compared.
    public let mask: UInt64
    /// The value the masked argument must have.
    public let value: UInt64

    /// The argument equals `value` in all 64 bits.
    public static func equals(_ index: UInt32, _ value: UInt64) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: .max, value: value)
    }

    /// The low 32 bits of the argument equal `value`. Used for ioctl requests, which the
    /// kernel reads as 32 bits, so that a caller's sign extension cannot defeat the test.
    public static func lowHalfEquals(_ index: UInt32, _ value: UInt32) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: 0xFFFF_FFFF, value: UInt64(value))
    }

    /// None of `bits` is set in the argument (for example no `PROT_EXEC` in `mmap`).
    public static func clear(_ index: UInt32, _ bits: UInt64) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: bits, value: 0)
    }

    /// All of `bits` are set in the argument (for example `CLONE_THREAD` in `clone`).
    public static func set(_ index: UInt32, _ bits: UInt64) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: bits, value: bits)
    }

    /// `arg1 == 0xae80` or `arg2 & 0x4 == 0`, as a reader would write it.
    public var description: String {
        if mask == .max { return "arg\(index) == 0x\(String(value, radix: 16))" }
        if value == 0 { return "arg\(index) & 0x\(String(mask, radix: 16)) == 0" }
        return "arg\(index) & 0x\(String(mask, radix: 16)) == 0x\(String(value, radix: 16))"
    }
}

/// One system call an allow-list lets through (always, or when one of its argument tests
/// holds), or answers with an error number without running it.
public struct SyscallRule: Hashable, Sendable, CustomStringConvertible {
    /// The system call's name as libseccomp knows it (`"ioctl"`, `"pread64"`).
    public let name: String
    /// The accepted argument combinations: the call passes when every condition of one of
    /// them holds. Empty means any arguments.
    public let alternatives: [[ArgumentCondition]]
    /// When set, the call never runs and fails with this `errno` instead (`SECCOMP_RET_ERRNO`).
    public let errno: Int32?

    /// Creates a rule; see ``allow(_:)`` and the other factories.
    public init(name: String, alternatives: [[ArgumentCondition]], errno: Int32? = nil) {
        self.name = name
        self.alternatives = alternatives
        self.errno = errno
    }

    /// Whether the call passes whatever its arguments.
    public var isUnconditional: Bool { alternatives.isEmpty }

    /// Whether the rule lets the call run (rather than failing it).
    public var allows: Bool { errno == nil }

    /// `name` with any arguments.
    public static func allow(_ name: String) -> SyscallRule {
        SyscallRule(name: name, alternatives: [])
    }

    /// `name` when every one of `conditions` holds.
    public static func allow(_ name: String, when conditions: ArgumentCondition...) -> SyscallRule {
        SyscallRule(name: name, alternatives: [conditions])
    }

    /// `name` fails with `errno` without running (for example `clone3` with `ENOSYS`, so that
    /// glibc falls back to `clone`, whose flags a filter can test).
    public static func fail(_ name: String, errno: Int32) -> SyscallRule {
        SyscallRule(name: name, alternatives: [], errno: errno)
    }

    /// `name` when argument `index` equals one of `values` (low 32 bits only when `low32`).
    public static func allow(_ name: String, argument index: UInt32, oneOf values: [UInt64], low32: Bool = false) -> SyscallRule {
        let tests = Set(values).sorted().map { value in
            [low32 ? ArgumentCondition.lowHalfEquals(index, UInt32(truncatingIfNeeded: value)) : .equals(index, value)]
        }
        return SyscallRule(name: name, alternatives: tests)
    }

    /// `ioctl` for these request numbers.
    public static func ioctl(_ requests: [UInt64]) -> SyscallRule {
        allow("ioctl", argument: 1, oneOf: requests, low32: true)
    }

    /// Combines rules that name the same call: a call any of them lets through passes; a
    /// failing rule wins over rules that allow the same call. Returns one rule per call,
    /// sorted by name.
    public static func merge(_ rules: [SyscallRule]) -> [SyscallRule] {
        let failing = Dictionary(rules.compactMap { rule in rule.errno.map { (rule.name, $0) } }, uniquingKeysWith: { first, _ in first })
        var byName: [String: [[ArgumentCondition]]?] = [:]
        for rule in rules where failing[rule.name] == nil {
            if rule.isUnconditional {
                byName[rule.name] = .some(nil)
            } else if let existing = byName[rule.name] {
                if let tests = existing { byName[rule.name] = .some(tests + rule.alternatives) }
            } else {
                byName[rule.name] = .some(rule.alternatives)
            }
        }
        let allowed = byName.keys.map { name -> SyscallRule in
            guard let tests = byName[name]!, !tests.isEmpty else { return .allow(name) }
            var seen = Set<[ArgumentCondition]>()
            return SyscallRule(name: name, alternatives: tests.filter { seen.insert($0).inserted })
        }
        return (allowed + failing.map { SyscallRule.fail($0.key, errno: $0.value) }).sorted { $0.name < $1.name }
    }

    /// `ioctl` with its tests, just the name, or `clone3 fails with errno 38`.
    public var description: String {
        if let errno { return "\(name) fails with errno \(errno)" }
        return isUnconditional ? name : "\(name) if " + alternatives.map { $0.map(\.description).joined(separator: " && ") }.joined(separator: " || ")
    }
}
