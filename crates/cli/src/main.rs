fn main() {
    println!("dstack");
}
