// The bodies of ch-remote's actions that are not device configurations: resize, resize-disk,
// resize-zone, remove-device, snapshot, coredump, restore, send-migration and receive-migration,
// parsed and checked as Cloud Hypervisor v53.0's ch-remote does (its `resize_config`,
// `RestoreConfig::parse`, `VmSendMigrationData::parse`, `VmReceiveMigrationData::parse`...).
import Glibc
import VMM

/// Why an argument was refused: the first line names what was being parsed (Cloud
/// Hypervisor's wording, "Error parsing memory size"), the second what is wrong with which key.
struct SyntaxProblem: Error {
    let context: String
    let detail: String
}

/// A body and the descriptors that travel with it (SCM_RIGHTS).
struct ActionBody {
    var json: JSONText
    var descriptors: [Int32] = []
}

enum ActionBodies {
    // MARK: Sizes and counts

    /// A size as Cloud Hypervisor's `ByteSized` reads it: a whole number of bytes, optionally
    /// followed by `K`, `M` or `G` (powers of 1024; upper case only, as there). Sizes past
    /// 2^64 - 1 bytes are refused (Cloud Hypervisor's shift silently drops their high bits).
    static func byteSize(_ text: String) -> UInt64? {
        var digits = Substring(text.trimmingWhitespace)
        var shift: UInt64 = 0
        switch digits.last {
        case "K"?: shift = 10
        case "M"?: shift = 20
        case "G"?: shift = 30
        default: break
        }
        if shift > 0 { digits = digits.dropLast() }
        guard let number = UInt64(digits) else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }

    private static func size(_ text: String, option: String, context: String) throws(SyntaxProblem) -> UInt64 {
        guard let bytes = byteSize(text) else {
            throw SyntaxProblem(context: context, detail: "\(option) \(text) is not a size: a whole number of bytes, or one followed by K, M or G (for example 512M, 2G)")
        }
        return bytes
    }

    // MARK: resize, resize-disk, resize-zone, remove-device, snapshot, coredump

    /// `VmResize`: `{"desired_vcpus":N,"desired_ram":bytes,"desired_balloon":bytes}`, `null` for what is not given.
    static func resize(cpus: String?, memory: String?, balloon: String?) throws(SyntaxProblem) -> JSONText {
        var vcpus: UInt64?
        if let cpus {
            guard let count = UInt32(cpus) else {
                throw SyntaxProblem(context: "Error parsing CPU count", detail: "--cpus \(cpus) is not a whole number of vCPUs (0 to \(UInt32.max))")
            }
            vcpus = UInt64(count)
        }
        let ram = try memory.map { (text) throws(SyntaxProblem) in try size(text, option: "--memory", context: "Error parsing memory size") }
        let balloonSize = try balloon.map { (text) throws(SyntaxProblem) in try size(text, option: "--balloon", context: "Error parsing balloon size") }
        return .object([("desired_vcpus", .integer(vcpus)), ("desired_ram", .integer(ram)), ("desired_balloon", .integer(balloonSize))])
    }

    /// `VmResizeDisk`: `{"id":...,"desired_size":bytes}`.
    static func resizeDisk(id: String, size text: String) throws(SyntaxProblem) -> JSONText {
        let bytes = try size(text, option: "--size", context: "Invalid disk size")
        return .object([("id", .string(id)), ("desired_size", .integer(bytes))])
    }

    /// `VmResizeZone`: `{"id":...,"desired_ram":bytes}`.
    static func resizeZone(id: String, size text: String) throws(SyntaxProblem) -> JSONText {
        let bytes = try size(text, option: "--size", context: "Error parsing memory size")
        return .object([("id", .string(id)), ("desired_ram", .integer(bytes))])
    }

    /// `VmRemoveDevice`: `{"id":...}`.
    static func removeDevice(id: String) -> JSONText { .object([("id", .string(id))]) }

    /// `VmSnapshotConfig` and `VmCoredumpData`: `{"destination_url":...}`.
    static func destination(_ url: String) -> JSONText { .object([("destination_url", .string(url))]) }

    // MARK: restore

    /// The accepted `restore` syntax.
    static let restoreSyntax =
        "source_url=<source_url>,prefault=on|off,memory_restore_mode=copy|ondemand,net_fds=<list_of_net_ids_with_their_associated_fds>,resume=true|false"

    /// `RestoreConfig`. The descriptors of `net_fds=[net1@[23,24],...]` must be open in this
    /// process: they go with the request, and the body keeps only each NIC's id and count.
    static func restore(_ text: String) throws(SyntaxProblem) -> ActionBody {
        let context = "Error parsing restore syntax"
        let list = try options(text, "restore", ["source_url", "prefault", "memory_restore_mode", "net_fds", "resume"], context: context)
        guard let source = list["source_url"] else {
            throw SyntaxProblem(context: context, detail: "source_url= is required: \(restoreSyntax)")
        }
        let prefault = try flag(list, "prefault", context: context)
        let resume = try flag(list, "resume", context: context)
        let mode: String
        switch list["memory_restore_mode"]?.lowercased() {
        case nil, "copy": mode = "Copy"
        case "ondemand": mode = "OnDemand"
        case let other?: throw SyntaxProblem(context: context, detail: "memory_restore_mode=\(other) is not copy or ondemand")
        }
        var nets: JSONText = .null
        var descriptors: [Int32] = []
        if let value = list["net_fds"] {
            let pairs = try netDescriptors(value, context: context)
            nets = .array(pairs.map { .object([("id", .string($0.id)), ("num_fds", .integer(UInt64($0.fds.count))), ("fds", .null)]) })
            descriptors = pairs.flatMap(\.fds)
        }
        let json: JSONText = .object([
            ("source_url", .string(source)), ("prefault", .bool(prefault)), ("memory_restore_mode", .string(mode)),
            ("net_fds", nets), ("resume", .bool(resume)),
        ])
        return ActionBody(json: json, descriptors: descriptors)
    }

    /// `[net1@[23,24],net2@[25]]`: ids with their descriptors (ranges `3-5` allowed, as in
    /// Cloud Hypervisor's integer lists).
    private static func netDescriptors(_ value: String, context: String) throws(SyntaxProblem) -> [(id: String, fds: [Int32])] {
        let bad = SyntaxProblem(context: context, detail: "net_fds=\(value) is not a list of NIC ids with descriptors like [net1@[23,24],net2@[25]]")
        let trimmed = value.trimmingWhitespace
        guard trimmed.hasPrefix("["), trimmed.hasSuffix("]"), trimmed.count >= 2 else { throw bad }
        var result: [(id: String, fds: [Int32])] = []
        for item in splitTopLevel(String(trimmed.dropFirst().dropLast())) {
            var quoted = false
            var at: String.Index?
            for index in item.indices {
                if item[index] == "\"" { quoted.toggle() }
                if item[index] == "@", !quoted {
                    guard at == nil else { throw bad }
                    at = index
                }
            }
            guard let at else { throw bad }
            let id = String(item[..<at]).filter { $0 != "\"" }
            var fds: [Int32] = []
            let numbers = item[item.index(after: at)...].trimmingWhitespace.filter { $0 != "[" && $0 != "]" }
            for range in numbers.split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = range.split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2, let low = Int32(bounds[0]), low >= 0, let high = Int32(bounds[bounds.count - 1]),
                      bounds.count == 1 || low < high, high - low < 1024 else { throw bad }
                fds += Array(low...high)
            }
            result.append((id, fds))
        }
        return result
    }

    /// Splits at commas outside brackets and quotes.
    private static func splitTopLevel(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var depth = 0
        var quoted = false
        for character in text {
            switch character {
            case "\"": quoted.toggle()
            case "[" where !quoted: depth += 1
            case "]" where !quoted: depth -= 1
            case "," where !quoted && depth == 0:
                items.append(current)
                current = ""
                continue
            default: break
            }
            current.append(character)
        }
        items.append(current)
        return items
    }

    // MARK: send-migration, receive-migration

    /// The accepted `send-migration` syntax.
    static let sendMigrationSyntax =
        "destination_url=<url>[,local=on|off,downtime_ms=<milliseconds>,timeout_s=<seconds>,timeout_strategy=cancel|ignore,connections=<amount>,tls_dir=<path>,memory_mode=precopy|postcopy]"
    /// The accepted `receive-migration` syntax.
    static let receiveMigrationSyntax = "receiver_url=<url>[,tls_dir=<path>][,memory_mode=precopy|postcopy]"
    /// The most parallel connections a migration may use (Cloud Hypervisor's `MAX_MIGRATION_CONNECTIONS`).
    static let maxMigrationConnections: UInt64 = 128

    /// `SendMigrationData`, with Cloud Hypervisor's defaults written out (downtime 300 ms,
    /// timeout one hour, one connection) and its checks on the combination.
    static func sendMigration(_ text: String) throws(SyntaxProblem) -> JSONText {
        let context = "Error parsing send migration configuration"
        let list = try options(text, "send-migration", [
            "destination_url", "local", "downtime_ms", "timeout_s", "timeout_strategy", "connections", "tls_dir", "memory_mode",
        ], context: context)
        guard let url = list["destination_url"] else {
            throw SyntaxProblem(context: context, detail: "destination_url= is required: \(sendMigrationSyntax)")
        }
        let local = try flag(list, "local", context: context)
        let downtime = try nonZero(list, "downtime_ms", limit: UInt64.max, context: context) ?? 300
        let timeout = try nonZero(list, "timeout_s", limit: UInt64.max, context: context) ?? 3600
        let connections = try nonZero(list, "connections", limit: UInt64(UInt32.max), context: context) ?? 1
        let strategy: String
        switch list["timeout_strategy"]?.lowercased() {
        case nil, "cancel": strategy = "Cancel"
        case "ignore": strategy = "Ignore"
        case let other?: throw SyntaxProblem(context: context, detail: "timeout_strategy=\(other) is not cancel or ignore")
        }
        let mode = try memoryMode(list, context: context)
        let tlsDirectory = list["tls_dir"]

        func invalid(_ reason: String) -> SyntaxProblem {
            SyntaxProblem(context: context, detail: "Error validating send migration parameters: \(reason)")
        }
        if url.hasPrefix("tcp:") {
            if let problem = tcpAddressProblem(String(url.dropFirst(4))) {
                throw invalid("destination_url must use tcp:<host>:<port> or unix:<path>: \(problem)")
            }
        } else if url.hasPrefix("unix:"), url.count > 5 {
            if connections > 1 { throw invalid("UNIX sockets and connections option cannot be used at the same time.") }
            if tlsDirectory != nil { throw invalid("UNIX sockets and TLS encryption cannot be used at the same time.") }
        } else {
            throw invalid("destination_url must use tcp:<host>:<port> or unix:<path>.")
        }
        if connections > maxMigrationConnections { throw invalid("connections must not exceed \(maxMigrationConnections).") }
        if local {
            if !url.hasPrefix("unix:") { throw invalid("local option is only supported with UNIX sockets.") }
            if connections > 1 { throw invalid("local option and connections option cannot be used at the same time.") }
        }
        if let tlsDirectory, let problem = tlsDirectoryProblem(tlsDirectory, files: ["ca-cert.pem", "client-cert.pem", "client-key.pem"], endpoint: "migration client") {
            throw invalid("invalid TLS configuration for send-migration (tls_dir): \(problem)")
        }
        if mode == "Postcopy" {
            if local { throw invalid("memory_mode=postcopy and local options are mutually exclusive.") }
            if connections > 1 { throw invalid("memory_mode=postcopy currently requires a single connection (connections=1).") }
        }
        return .object([
            ("destination_url", .string(url)), ("local", .bool(local)), ("downtime_ms", .integer(downtime)),
            ("timeout_s", .integer(timeout)), ("timeout_strategy", .string(strategy)), ("connections", .integer(connections)),
            ("tls_dir", .string(tlsDirectory)), ("memory_mode", .string(mode)),
        ])
    }

    /// `ReceiveMigrationData`.
    static func receiveMigration(_ text: String) throws(SyntaxProblem) -> JSONText {
        let context = "Error parsing receive migration configuration"
        let list = try options(text, "receive-migration", ["receiver_url", "tls_dir", "memory_mode"], context: context)
        guard let url = list["receiver_url"] else {
            throw SyntaxProblem(context: context, detail: "receiver_url= is required: \(receiveMigrationSyntax)")
        }
        let mode = try memoryMode(list, context: context)
        let tlsDirectory = list["tls_dir"]
        func invalid(_ reason: String) -> SyntaxProblem {
            SyntaxProblem(context: context, detail: "Error validating receive migration parameters: \(reason)")
        }
        if url.hasPrefix("tcp:") {
            if let problem = tcpAddressProblem(String(url.dropFirst(4))) {
                throw invalid("receiver_url must use tcp:<host>:<port> or unix:<path>: \(problem).")
            }
        } else if url.hasPrefix("unix:"), url.count > 5 {
            if tlsDirectory != nil { throw invalid("UNIX sockets and TLS encryption cannot be used at the same time.") }
        } else {
            throw invalid("receiver_url must use tcp:<host>:<port> or unix:<path>.")
        }
        if let tlsDirectory, let problem = tlsDirectoryProblem(tlsDirectory, files: ["ca-cert.pem", "server-cert.pem", "server-key.pem"], endpoint: "migration server") {
            throw invalid("invalid TLS configuration for receive-migration (tls_dir): \(problem)")
        }
        return .object([("receiver_url", .string(url)), ("tls_dir", .string(tlsDirectory)), ("memory_mode", .string(mode))])
    }

    /// What is wrong with `<host>:<port>` or `[<ipv6>]:<port>`, or nil.
    static func tcpAddressProblem(_ address: String) -> String? {
        let host: Substring
        let port: Substring
        if address.hasPrefix("[") {
            let rest = address.dropFirst()
            guard let close = rest.firstIndex(of: "]") else { return "Missing closing ']' for bracketed IPv6 address" }
            host = rest[..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { return "Missing port separator after bracketed host" }
            port = after.dropFirst()
        } else {
            guard let colon = address.lastIndex(of: ":") else { return "Missing TCP port" }
            host = address[..<colon]
            port = address[address.index(after: colon)...]
        }
        if host.isEmpty { return "Host must not be empty" }
        if port.isEmpty { return "Port must not be empty" }
        if UInt16(port) == nil { return "Invalid TCP port: \(port)" }
        return nil
    }

    /// What is wrong with a TLS certificate directory (it must hold `files`, each a readable
    /// regular file), or nil.
    static func tlsDirectoryProblem(_ directory: String, files: [String], endpoint: String) -> String? {
        var info = stat()
        guard stat(directory, &info) == 0 else {
            return "TLS directory does not exist or is inaccessible: \(directory): \(String(cString: strerror(errno)))"
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "TLS directory must point to a directory: \(directory)" }
        for name in files {
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            guard stat(path, &info) == 0 else {
                if errno == ENOENT { return "Missing required TLS file for \(endpoint): \(path)" }
                return "Failed to inspect required TLS file for \(endpoint): \(path): \(String(cString: strerror(errno)))"
            }
            guard info.st_mode & S_IFMT == S_IFREG else { return "Required TLS path for \(endpoint) must be a regular file: \(path)" }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return "Required TLS file for \(endpoint) is not readable: \(path): \(String(cString: strerror(errno)))" }
            close(fd)
        }
        return nil
    }

    // MARK: Option values

    private static func options(_ text: String, _ command: String, _ keys: [String], context: String) throws(SyntaxProblem) -> OptionList {
        do {
            return try OptionList(text, option: command, knownKeys: keys)
        } catch {
            throw SyntaxProblem(context: context, detail: error.message)
        }
    }

    private static func flag(_ list: OptionList, _ key: String, context: String) throws(SyntaxProblem) -> Bool {
        do {
            return try list.bool(key) ?? false
        } catch {
            throw SyntaxProblem(context: context, detail: error.message)
        }
    }

    private static func nonZero(_ list: OptionList, _ key: String, limit: UInt64, context: String) throws(SyntaxProblem) -> UInt64? {
        guard let text = list[key] else { return nil }
        guard let value = UInt64(text), value <= limit else {
            throw SyntaxProblem(context: context, detail: "\(key)=\(text) is not a whole number from 1 to \(limit)")
        }
        guard value > 0 else { throw SyntaxProblem(context: context, detail: "\(key) must be non-zero") }
        return value
    }

    private static func memoryMode(_ list: OptionList, context: String) throws(SyntaxProblem) -> String {
        switch list["memory_mode"]?.lowercased() {
        case nil, "precopy": return "Precopy"
        case "postcopy": return "Postcopy"
        case let other?: throw SyntaxProblem(context: context, detail: "memory_mode=\(other) is not precopy or postcopy")
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing white space.
    var trimmingWhitespace: String {
        var text = Substring(self).drop(while: \.isWhitespace)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
