// `--api-socket`: where the REST API listens, as Cloud Hypervisor spells it
// (`path=/run/ch.sock`, `fd=3`, or a bare path).
import VMM

/// Where the API server listens: a socket path it creates, or a socket it inherits.
public enum APISocketConfig: Equatable, Sendable, CustomStringConvertible {
    /// Create (bind) a Unix socket at this path, replacing a stale socket file left there.
    case path(String)
    /// Adopt this already bound (and possibly listening) Unix stream socket descriptor.
    case fileDescriptor(Int32)

    /// The accepted `--api-socket` syntax.
    public static let syntax = "path=</path/to/a/socket>|fd=<an open socket descriptor>"

    /// Parses an `--api-socket` value: `path=...`, `fd=N`, or a bare path.
    public static func parse(_ text: String, option: String = "--api-socket") throws(ConfigError) -> APISocketConfig {
        let list = try OptionList(text, option: option, knownKeys: ["path", "fd"], bareKey: "path")
        switch (list["path"], list["fd"]) {
        case (nil, nil):
            throw ConfigError(option: option, "give a socket: \(syntax)")
        case (.some, .some):
            throw ConfigError(option: option, "give either path= or fd=, not both")
        case let (.some(path), nil):
            guard !path.isEmpty else { throw ConfigError(option: option, "path= needs a socket path") }
            return .path(path)
        case let (nil, .some(fdText)):
            guard let fd = Int32(fdText), fd >= 0 else {
                throw ConfigError(option: option, "fd=\(fdText) is not a file descriptor number (0 or more)")
            }
            return .fileDescriptor(fd)
        }
    }

    /// `path=...` or `fd=N`, as the option takes it.
    public var description: String {
        switch self {
        case let .path(path): "path=\(path)"
        case let .fileDescriptor(fd): "fd=\(fd)"
        }
    }
}
