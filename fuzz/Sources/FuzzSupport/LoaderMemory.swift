import GuestMemory

/// Guest memory for the kernel-loader targets: RAM from 0 to 2 MiB in two regions, so a
/// segment may straddle the boundary at 1.5 MiB. Mapped once; loaders only write into it.
public enum LoaderMemory {
    /// The mapped memory.
    public static let memory: GuestMemory = {
        do {
            return try GuestMemory.anonymous([(GuestAddress(0), 0x18_0000), (GuestAddress(0x18_0000), 0x8_0000)])
        } catch {
            fatalError("cannot map the loader guest memory: \(error)")
        }
    }()
}
