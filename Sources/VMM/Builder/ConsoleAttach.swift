import HostSystem
import VirtioDevices
import VMAllocator

/// The virtio console of a running VM and its host side.
struct AttachedConsole {
    let device: VirtioConsole
    let attachment: VirtioPCIAttachment
    let address: String
    let host: HostEndpoint
    let input: HostInputPump?
}

extension VMBuilder {
    /// Attaches the virtio console (`--console tty|pty|file=|null`; nothing for `off`): output
    /// to the host endpoint, input from it with backpressure, and the terminal's size when
    /// the console is a terminal.
    func attachVirtioConsole(_ config: ConsoleConfig, context: VirtioAttachContext, bars: inout BARWindows) throws -> AttachedConsole? {
        guard let host = try HostEndpoint.open(config, what: "virtio console", logger: logger) else { return nil }
        let size = config.mode == .tty ? RawTerminal.windowSize(1) : nil
        let console = VirtioConsole(output: host.output ?? DiscardingConsoleOutput(), cols: size?.columns ?? 0, rows: size?.rows ?? 0)
        let (attachment, address) = try attachVirtio(console, id: "_console", context: context, bars: &bars, behindIOMMU: config.iommu)
        let input = try host.startInput(into: .console(console), name: "virtio console", events: context.events, logger: logger)
        return AttachedConsole(device: console, attachment: attachment, address: address, host: host, input: input)
    }
}
