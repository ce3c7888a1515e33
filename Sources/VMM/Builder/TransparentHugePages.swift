import HostSystem
import Logging

/// `--memory thp=on` (the default): guest RAM not backed by hugetlbfs is marked eligible for
/// transparent huge pages, as Cloud Hypervisor's memory manager does for every RAM region it
/// maps. The host then backs it with 2 MiB pages where it can, which also lets KVM map it to
/// the guest with 2 MiB pages: far fewer nested page faults while the guest first touches its
/// memory (boot, page cache, hash tables).
enum TransparentHugePages {
    /// `MADV_HUGEPAGE`.
    static let advice: Int32 = 14

    /// Marks `mapping` when `config` asks for it (`thp=on` and `hugepages=off`). A refusal
    /// (a host without transparent huge pages) is a warning, not an error, as in Cloud Hypervisor.
    static func apply(_ config: MemoryConfig, to mapping: MemoryMapping, logger: Logger?) {
        guard config.thp, !config.hugepages else { return }
        do {
            try mapping.advise(offset: 0, length: mapping.size, advice: advice)
        } catch {
            logger?.warning("Failed to mark pages as THP eligible: \(error)")
        }
    }
}
