/// Why a seccomp filter could not be built or installed.
public enum SeccompError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An allow-list names a system call that libseccomp does not know on this architecture.
    case unknownSyscall(name: String, list: String)
    /// A libseccomp call failed; `errno` is the positive error number it returned.
    case library(call: String, list: String, errno: Int32)
    /// Installing the SIGSYS handler failed.
    case signalHandler(errno: Int32)

    /// A sentence naming the list, the call and the reason.
    public var description: String {
        switch self {
        case let .unknownSyscall(name, list):
            "seccomp: the \(list) allow-list names system call '\(name)', which libseccomp does not know on this architecture"
        case let .library(call, list, errno):
            "seccomp: \(call) failed for the \(list) filter: \(Self.reason(errno)) (errno \(errno))"
        case let .signalHandler(errno):
            "seccomp: sigaction(SIGSYS) failed: \(Self.reason(errno)) (errno \(errno))"
        }
    }

    private static func reason(_ errno: Int32) -> String {
        guard let text = strerror(errno) else { return "unknown error" }
        return String(cString: text)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
