// `--serial`, `--console` and `--debug-console`: where the guest's text goes, with Cloud
// Hypervisor's modes, JSON names and defaults (SerialConfig, ConsoleConfig, DebugConsoleConfig).

/// Where a serial port or console goes.
public enum ConsoleOutputMode: String, Codable, Equatable, Sendable, CaseIterable {
    /// No device at all.
    case off = "Off"
    /// A new pseudo-terminal; its path is in `vm.info` (`file`).
    case pty = "Pty"
    /// This process's terminal (standard input and output).
    case tty = "Tty"
    /// A file (output only).
    case file = "File"
    /// A Unix socket the VMM listens on; one client at a time reads and writes the device.
    case socket = "Socket"
    /// The device exists; output is discarded, no input.
    case null = "Null"
}

/// `--serial` / `--console`. The serial port uses `mode`, `file` and `socket`; the virtio
/// console is also a PCI device (`pci`).
public struct ConsoleConfig: Codable, Equatable, Sendable {
    /// The file for `.file` mode; for `.pty`, the pseudo-terminal's path once the VM runs.
    public var file: String?
    /// The mode.
    public var mode: ConsoleOutputMode
    /// The socket path for `.socket` mode.
    public var socket: String?
    /// The virtio console's PCI fields (id, iommu, segment, slot); unused by the serial port.
    public var pci = PCIDeviceCommon()

    /// Place the device behind the virtual IOMMU.
    public var iommu: Bool {
        get { pci.iommu }
        set { pci.iommu = newValue }
    }

    /// Creates a console configuration.
    public init(mode: ConsoleOutputMode, file: String? = nil, socket: String? = nil, iommu: Bool = false) {
        self.mode = mode
        self.file = file
        self.socket = socket
        pci.iommu = iommu
    }

    enum CodingKeys: String, CodingKey { case file, mode, socket }

    /// Decodes with Cloud Hypervisor's defaults for absent fields (`mode` is required).
    public init(from decoder: any Decoder) throws {
        try self.init(serialFrom: decoder)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Decodes Cloud Hypervisor's SerialConfig: `mode`, `file` and `socket`; no PCI field is read.
    init(serialFrom decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.decode(ConsoleOutputMode.self, forKey: .mode)
        file = try c.optional(.file)
        socket = try c.optional(.socket)
    }

    /// Encodes as Cloud Hypervisor's ConsoleConfig (with the PCI fields).
    public func encode(to encoder: any Encoder) throws {
        try encodeSerial(to: encoder)
        try pci.encode(to: encoder)
    }

    /// Encodes as Cloud Hypervisor's SerialConfig (`file`, `mode`, `socket`).
    func encodeSerial(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(file, forKey: .file)
        try c.encode(mode, forKey: .mode)
        try c.encodeIfPresent(socket, forKey: .socket)
    }

    /// Cloud Hypervisor's serial default: the port exists, output discarded.
    public static let defaultSerial = ConsoleConfig(mode: .null)
    /// Cloud Hypervisor's virtio-console default: on the terminal (standard input and output).
    public static let defaultConsole = ConsoleConfig(mode: .tty)

    /// The accepted `--serial` syntax.
    public static let serialSyntax = "off|null|pty|tty|file=<path>|socket=<path>"
    /// The accepted `--console` syntax.
    public static let syntax = "off|null|pty|tty|file=<path>|socket=<path>,\(PCIDeviceCommon.syntax)"

    /// Parses `--serial` or `--console` (`option` names which, for errors).
    public static func parse(_ text: String, option: String) throws(ConfigError) -> ConsoleConfig {
        let isConsole = option != "--serial"
        let keys = ["mode", "file", "socket"] + (isConsole ? PCIDeviceCommon.keys : [])
        let list = try OptionList(text, option: option, knownKeys: keys, bareKey: "mode")
        var config: ConsoleConfig
        switch (list["mode"], list["file"], list["socket"]) {
        case let (nil, file?, nil):
            guard !file.isEmpty else { throw ConfigError(option: option, "file= needs a path") }
            config = ConsoleConfig(mode: .file, file: file)
        case let (nil, nil, socket?):
            guard !socket.isEmpty else { throw ConfigError(option: option, "socket= needs a path") }
            config = ConsoleConfig(mode: .socket, socket: socket)
        case (nil, nil, nil):
            throw ConfigError(option: option, "no mode given; use \(isConsole ? syntax : serialSyntax)")
        case let (mode?, nil, nil):
            switch mode {
            case "off": config = ConsoleConfig(mode: .off)
            case "null": config = ConsoleConfig(mode: .null)
            case "pty": config = ConsoleConfig(mode: .pty)
            case "tty": config = ConsoleConfig(mode: .tty)
            default: throw ConfigError(option: option, "'\(mode)' is not accepted; use \(isConsole ? syntax : serialSyntax)")
            }
        default:
            throw ConfigError(option: option, "give one of a mode (off, null, pty, tty), file= or socket=")
        }
        if isConsole { config.pci = try PCIDeviceCommon.parse(list) }
        return config
    }
}

/// `--debug-console`: the x86 debug console port (Cloud Hypervisor's default: off, port 0xe9).
public struct DebugConsoleConfig: Codable, Equatable, Sendable {
    /// The file for `.file` mode.
    public var file: String?
    /// The mode.
    public var mode: ConsoleOutputMode = .off
    /// The I/O port.
    public var iobase: UInt16? = 0xe9

    /// Off, at port 0xe9.
    public init() {}

    enum CodingKeys: String, CodingKey { case file, mode, iobase }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        file = try c.optional(.file)
        mode = try c.decode(ConsoleOutputMode.self, forKey: .mode)
        iobase = try c.optional(.iobase)
    }

    /// The accepted syntax.
    public static let syntax = "off|null|pty|tty|file=<path>,iobase=<port in hex>"

    /// Parses `--debug-console`.
    public static func parse(_ text: String) throws(ConfigError) -> DebugConsoleConfig {
        let list = try OptionList(text, option: "--debug-console", knownKeys: ["mode", "file", "iobase"], bareKey: "mode")
        var config = DebugConsoleConfig()
        if let file = list["file"] {
            config.mode = .file
            config.file = file
        } else {
            switch list["mode"] {
            case "off"?: config.mode = .off
            case "null"?: config.mode = .null
            case "pty"?: config.mode = .pty
            case "tty"?: config.mode = .tty
            case let other?: throw ConfigError(option: "--debug-console", "'\(other)' is not accepted; use \(syntax)")
            case nil: break
            }
        }
        if let port = list["iobase"] {
            let digits = port.hasPrefix("0x") ? String(port.dropFirst(2)) : port
            guard let value = UInt16(digits, radix: 16) else {
                throw ConfigError(option: "--debug-console", "iobase=\(port) is not a port number in hexadecimal")
            }
            config.iobase = value
        }
        return config
    }
}
