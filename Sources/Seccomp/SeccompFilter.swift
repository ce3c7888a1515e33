// A libseccomp filter context built from an allow-list. The only file of the module that
// holds libseccomp's context pointer.
import CLinux
import CSeccomp

/// A seccomp filter built from an allow-list by libseccomp, ready to load on the calling
/// thread.
///
/// Building checks every name against this architecture's system call table, so a typo in
/// an allow-list fails here, in a unit test, and never on a VMM thread.
public final class SeccompFilter {
    /// The allow-list's name, for messages (a ``ThreadKind``'s name).
    public let list: String
    /// What happens to a call outside the list.
    public let action: SeccompAction
    /// The rules the filter lets through.
    public let rules: [SyscallRule]
    // The libseccomp context: owned by this object, released in deinit, never shared.
    private let context: scmp_filter_ctx

    /// The filter for `kind` (``SeccompPolicy/rules(for:)``).
    public convenience init(kind: ThreadKind, action: SeccompAction) throws(SeccompError) {
        try self.init(rules: SeccompPolicy.rules(for: kind), action: action, list: kind.description)
    }

    /// A filter that lets `rules` through and applies `action` to everything else; `list`
    /// names it in errors.
    public init(rules: [SyscallRule], action: SeccompAction, list: String) throws(SeccompError) {
        let defaultAction = switch action {
        case .trap: SCMP_ACT_TRAP
        case .log: SCMP_ACT_LOG
        }
        guard let context = seccomp_init(defaultAction) else {
            throw .library(call: "seccomp_init", list: list, errno: ENOMEM)
        }
        self.context = context
        self.list = list
        self.action = action
        self.rules = rules
        // A binary tree of syscall numbers: a long list (the VMM's) costs a few comparisons.
        try check(seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE)")
        for rule in rules {
            let number = seccomp_syscall_resolve_name(rule.name)
            // Negative numbers are libseccomp's error or a pseudo-syscall of another architecture.
            guard number >= 0 else { throw .unknownSyscall(name: rule.name, list: list) }
            // SCMP_ACT_ERRNO(errno), a function-like macro Swift cannot expand.
            let ruleAction = rule.errno.map { 0x0005_0000 | UInt32($0 & 0xFFFF) } ?? SCMP_ACT_ALLOW
            if rule.isUnconditional {
                try check(seccomp_rule_add_array(context, ruleAction, number, 0, nil), "seccomp_rule_add(\(rule))")
                continue
            }
            for conditions in rule.alternatives {
                let comparisons = conditions.map { condition in
                    condition.mask == .max
                        ? scmp_arg_cmp(arg: condition.index, op: SCMP_CMP_EQ, datum_a: condition.value, datum_b: 0)
                        : scmp_arg_cmp(arg: condition.index, op: SCMP_CMP_MASKED_EQ, datum_a: condition.mask, datum_b: condition.value)
                }
                // SAFETY: libseccomp reads `comparisons.count` entries during the call only.
                let result = comparisons.withUnsafeBufferPointer {
                    seccomp_rule_add_array(context, ruleAction, number, UInt32($0.count), $0.baseAddress)
                }
                try check(result, "seccomp_rule_add(\(rule))")
            }
        }
    }

    deinit {
        seccomp_release(context)
    }

    /// How many system calls the filter lets through (with or without argument tests).
    public var allowedSyscallCount: Int { Set(rules.filter(\.allows).map(\.name)).count }

    /// Loads the filter on the calling thread only (no `SECCOMP_FILTER_FLAG_TSYNC`), after
    /// setting its no-new-privileges bit. It cannot be removed; threads the caller starts
    /// later inherit it.
    ///
    /// The corresponding system call is `seccomp(SECCOMP_SET_MODE_FILTER)`.
    public func load() throws(SeccompError) {
        try check(seccomp_load(context), "seccomp_load")
    }

    /// libseccomp returns a negative errno on failure.
    private func check(_ result: Int32, _ call: String) throws(SeccompError) {
        if result < 0 { throw .library(call: call, list: list, errno: -result) }
    }
}
