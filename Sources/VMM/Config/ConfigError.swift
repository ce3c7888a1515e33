/// A configuration the VMM refuses, with the option at fault and what it accepts.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The option or field at fault (`"--cpus"`, `"memory.size"`).
    public let option: String
    /// What is wrong and what is accepted.
    public let message: String

    /// Creates the error.
    public init(option: String, _ message: String) {
        self.option = option
        self.message = message
    }

    /// `"<option>: <message>"`.
    public var description: String { "\(option): \(message)" }
}
