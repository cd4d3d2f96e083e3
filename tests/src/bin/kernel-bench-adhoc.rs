fn main() {
    let o = if std::env::args().any(|a| a == "--quick") { egress_lab::bench::kernel::KernelOptions::quick() } else { egress_lab::bench::kernel::KernelOptions::full() };
    print!("{}", egress_lab::bench::kernel::run(&o).text());
}
