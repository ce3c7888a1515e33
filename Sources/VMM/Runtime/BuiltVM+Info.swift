// What `vm.info` reports of a running VM beyond its configuration.

extension BuiltVM {
    /// The serial port's pseudo-terminal, when it is on one.
    var serialPTYPath: String? { devices.serialHost?.pty?.path }
    /// The virtio console's pseudo-terminal, when it is on one.
    var consolePTYPath: String? { console?.host.pty?.path }
}
